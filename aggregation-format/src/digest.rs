//! MD5 of several messages at once: the trailers of many aggregates, computed side by side.
//!
//! MD5 is one long chain of dependent steps per message, so one message keeps a core's adders
//! mostly waiting. Running [`LANES`] messages in lock step, word by word, lets the compiler put
//! them in vector registers (SSE2, part of every x86-64) with no `unsafe` and no CPU detection:
//! about three times the throughput of one message at a time on the same core (1.9 against
//! 0.63 GB/s on the development machine).

use md5::{Digest, Md5};

/// Messages hashed side by side.
const LANES: usize = 8;

type Lanes = [u32; LANES];

/// Per-step left rotations.
const SHIFTS: [u32; 64] = [
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9,
    14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10, 15,
    21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
];

/// Per-step constants: floor(|sin(i + 1)| * 2^32) (RFC 1321).
const CONSTANTS: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

const INITIAL: [u32; 4] = [0x67452301, 0xefcdab89, 0x98badcfe, 0x10325476];

/// Below this many messages, hashing them one at a time is as fast as lanes.
const FEWEST_FOR_LANES: usize = 3;

/// MD5 of each message, in order.
///
/// The messages go through [`LANES`] lanes, longest first; a lane whose message ends takes the
/// next one at its next block, so lanes idle only once every message has been started, and then
/// only over the shortest messages. Fewer than [`FEWEST_FOR_LANES`] messages are hashed one at a
/// time.
pub(crate) fn md5_many(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    let mut digests = vec![[0u8; 16]; messages.len()];
    if messages.len() < FEWEST_FOR_LANES {
        for (digest, message) in digests.iter_mut().zip(messages) {
            *digest = Md5::digest(message).into();
        }
        return digests;
    }
    let mut order: Vec<usize> = (0..messages.len()).collect();
    order.sort_unstable_by_key(|&i| std::cmp::Reverse(messages[i].len()));
    let mut queue = order.into_iter();
    let mut next_lane = || queue.next().map(|index| Lane::new(index, messages[index]));
    let mut lanes: [Option<Lane>; LANES] = std::array::from_fn(|_| next_lane());
    let mut state = INITIAL.map(|word| [word; LANES]);
    let mut words = [[0u32; LANES]; 16];
    loop {
        let mut busy = false;
        for (lane, slot) in lanes.iter().enumerate() {
            // An idle lane hashes whatever its words hold; its state is thrown away.
            if let Some(current) = slot {
                busy = true;
                let block = current.block(messages[current.index]);
                for (word, bytes) in words.iter_mut().zip(block.chunks_exact(4)) {
                    word[lane] = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                }
            }
        }
        if !busy {
            break;
        }
        compress(&mut state, &words);
        for (lane, slot) in lanes.iter_mut().enumerate() {
            let Some(current) = slot else { continue };
            current.next += 1;
            if current.next < current.blocks {
                continue;
            }
            let digest = &mut digests[current.index];
            for (bytes, word) in digest.chunks_exact_mut(4).zip(&state) {
                bytes.copy_from_slice(&word[lane].to_le_bytes());
            }
            *slot = next_lane();
            for (word, initial) in state.iter_mut().zip(INITIAL) {
                word[lane] = initial;
            }
        }
    }
    digests
}

/// MD5 of each message, in order, computed side by side as [`digest_aggregates`] and
/// [`deaggregate_batch`] compute trailers: for benchmarks that measure the lane bound.
/// Unstable (feature `unstable-internals`).
///
/// [`digest_aggregates`]: crate::digest_aggregates
/// [`deaggregate_batch`]: crate::deaggregate_batch
#[cfg(feature = "unstable-internals")]
pub fn md5_digests(messages: &[&[u8]]) -> Vec<[u8; 16]> {
    md5_many(messages)
}

/// A message being hashed in one lane.
struct Lane {
    /// Its position among the messages.
    index: usize,
    /// Its full 64-byte blocks.
    full: usize,
    /// Its last one or two blocks: the bytes after its last full block, then the padding (0x80,
    /// zeros, the length in bits).
    tail: [u8; 128],
    /// Blocks in all (full and tail).
    blocks: usize,
    /// The block to hash next.
    next: usize,
}

impl Lane {
    fn new(index: usize, message: &[u8]) -> Self {
        let full = message.len() / 64;
        let rest = &message[full * 64..];
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_blocks = if rest.len() < 56 { 1 } else { 2 };
        let bits = (message.len() as u64).wrapping_mul(8);
        tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits.to_le_bytes());
        Lane {
            index,
            full,
            tail,
            blocks: full + tail_blocks,
            next: 0,
        }
    }

    /// The 64 bytes of its next block.
    fn block<'a>(&'a self, message: &'a [u8]) -> &'a [u8] {
        if self.next < self.full {
            &message[self.next * 64..self.next * 64 + 64]
        } else {
            let at = (self.next - self.full) * 64;
            &self.tail[at..at + 64]
        }
    }
}

/// One 64-byte block of every lane.
///
/// Written as one loop over the steps with loops over the lanes inside, which the compiler
/// vectorizes; unrolled forms of the same code measured up to three times slower.
fn compress(state: &mut [Lanes; 4], words: &[Lanes; 16]) {
    let [mut a, mut b, mut c, mut d] = *state;
    for step in 0..64 {
        let (round, word) = match step / 16 {
            0 => (0, step),
            1 => (1, (5 * step + 1) % 16),
            2 => (2, (3 * step + 5) % 16),
            _ => (3, (7 * step) % 16),
        };
        lanes_step(&mut a, &b, &c, &d, &words[word], step, round);
        // The roles move round: (a, b, c, d) becomes (d, a, b, c).
        let moved = d;
        d = c;
        c = b;
        b = a;
        a = moved;
    }
    for (word, add) in state.iter_mut().zip([a, b, c, d]) {
        for lane in 0..LANES {
            word[lane] = word[lane].wrapping_add(add[lane]);
        }
    }
}

/// One MD5 step in every lane: `a = b + ((a + f(b, c, d) + K + M) <<< S)`, `f` by round.
#[inline(always)]
fn lanes_step(
    a: &mut Lanes,
    b: &Lanes,
    c: &Lanes,
    d: &Lanes,
    word: &Lanes,
    step: usize,
    round: usize,
) {
    let (k, s) = (CONSTANTS[step], SHIFTS[step]);
    let mut mixed = [0u32; LANES];
    for lane in 0..LANES {
        let (x, y, z) = (b[lane], c[lane], d[lane]);
        mixed[lane] = match round {
            0 => (x & y) | (!x & z),
            1 => (z & x) | (!z & y),
            2 => x ^ y ^ z,
            _ => y ^ (x | !z),
        };
    }
    for lane in 0..LANES {
        let sum = a[lane]
            .wrapping_add(mixed[lane])
            .wrapping_add(k)
            .wrapping_add(word[lane]);
        a[lane] = b[lane].wrapping_add(sum.rotate_left(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_around_the_block_edges_matches_md5() {
        // Lengths around 0, 55/56 (one or two padding blocks), 64 and beyond, in one group and
        // across groups.
        let messages: Vec<Vec<u8>> = (0..200usize)
            .map(|len| (0..len).map(|i| (i * 31 + len) as u8).collect())
            .collect();
        let refs: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
        let digests = md5_many(&refs);
        for (message, digest) in messages.iter().zip(&digests) {
            let expected: [u8; 16] = Md5::digest(message).into();
            assert_eq!(digest, &expected, "length {}", message.len());
        }
    }

    #[test]
    fn any_count_and_mix_of_lengths_matches_md5() {
        // Few messages (hashed one at a time), and long ones among short ones: a lane whose
        // message ends takes the next while the long ones go on.
        let lengths = [
            0usize, 1, 5_000, 3, 64, 20_000, 119, 120, 0, 55, 56, 63, 9_999, 2,
        ];
        let messages: Vec<Vec<u8>> = lengths
            .iter()
            .map(|&len| (0..len).map(|i| (i * 7 + len) as u8).collect())
            .collect();
        for count in 0..=messages.len() {
            let refs: Vec<&[u8]> = messages[..count].iter().map(Vec::as_slice).collect();
            let digests = md5_many(&refs);
            assert_eq!(digests.len(), count);
            for (message, digest) in refs.iter().zip(&digests) {
                let expected: [u8; 16] = Md5::digest(message).into();
                assert_eq!(
                    digest,
                    &expected,
                    "{count} messages, length {}",
                    message.len()
                );
            }
        }
    }

    #[test]
    fn known_answers() {
        // RFC 1321's test suite.
        let cases: [(&[u8], &str); 3] = [
            (b"", "d41d8cd98f00b204e9800998ecf8427e"),
            (b"abc", "900150983cd24fb0d6963f7d28e17f72"),
            (
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890",
                "57edf4a22be3c955ac49da2e2107b67a",
            ),
        ];
        let refs: Vec<&[u8]> = cases.iter().map(|(m, _)| *m).collect();
        for (digest, (_, hex)) in md5_many(&refs).iter().zip(cases) {
            let text: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(text, hex);
        }
    }
}
