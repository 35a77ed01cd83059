//! Splitting bytes into lines with bounded memory: a line longer than the record limit is not
//! kept, only measured, so that a 3 GiB line without a newline costs no more than a short one.
//!
//! Pure: bytes in, lines out, with their absolute byte offsets (the checkpoints of `--follow`
//! are offsets at line ends).

use kinesis_producer::Bytes;

/// One line of input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Line {
    /// Its number in its file, from 1.
    pub(crate) number: u64,
    /// Offset of the byte after it (after its `\n`; the end of input for an unterminated last
    /// line).
    pub(crate) end: u64,
    /// What it holds.
    pub(crate) content: Content,
}

/// What a line holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Content {
    /// The line without its `\n` and without a `\r` before it.
    Text(Bytes),
    /// The line is longer than the limit: `len` bytes (without the `\n` and a `\r` before it),
    /// not kept.
    TooLong {
        /// Its length.
        len: u64,
    },
}

/// Cuts a byte stream into [`Line`]s, keeping at most `max + 1` bytes of the line under way.
#[derive(Debug)]
pub(crate) struct Splitter {
    /// Longest line kept, without `\n` and `\r`.
    max: usize,
    /// The line under way, while it is within the limit (+1 for a `\r` that may end it).
    pending: Vec<u8>,
    /// Bytes of the line under way, kept or not.
    len: u64,
    /// Whether the last byte of the line under way is `\r`.
    cr: bool,
    /// Offset of the next byte fed.
    offset: u64,
    /// Number of the next line.
    number: u64,
}

impl Splitter {
    /// A splitter for input that starts at byte `offset`, whose first line is number `number`.
    pub(crate) fn new(max: usize, offset: u64, number: u64) -> Splitter {
        Splitter {
            max,
            pending: Vec::new(),
            len: 0,
            cr: false,
            offset,
            number,
        }
    }

    /// Offset of the next byte to feed (the bytes read so far, a partial line included).
    pub(crate) fn offset(&self) -> u64 {
        self.offset
    }

    /// Offset where the line under way started (the end of the last whole line).
    pub(crate) fn line_start(&self) -> u64 {
        self.offset - self.len
    }

    /// Number of the next whole line.
    pub(crate) fn next_number(&self) -> u64 {
        self.number
    }

    /// Feeds the next bytes; every line they complete is handed to `out`, in order.
    pub(crate) fn feed(&mut self, mut chunk: &[u8], out: &mut impl FnMut(Line)) {
        while !chunk.is_empty() {
            match chunk.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.take(&chunk[..at]);
                    self.offset += 1;
                    out(self.cut());
                    chunk = &chunk[at + 1..];
                }
                None => {
                    self.take(chunk);
                    chunk = &[];
                }
            }
        }
    }

    /// The end of input: the unterminated last line, if there is one.
    pub(crate) fn finish(&mut self) -> Option<Line> {
        (self.len > 0).then(|| self.cut())
    }

    fn take(&mut self, bytes: &[u8]) {
        let room = (self.max + 1).saturating_sub(self.pending.len());
        if self.len == self.pending.len() as u64 && bytes.len() <= room {
            self.pending.extend_from_slice(bytes);
        } else {
            // Over the limit: stop keeping it (and give its memory back at once).
            self.pending = Vec::new();
        }
        if let Some(&last) = bytes.last() {
            self.cr = last == b'\r';
        }
        self.len += bytes.len() as u64;
        self.offset += bytes.len() as u64;
    }

    fn cut(&mut self) -> Line {
        let number = self.number;
        self.number += 1;
        let len = std::mem::take(&mut self.len);
        let kept = len == self.pending.len() as u64;
        let mut text = std::mem::take(&mut self.pending);
        let content_len = len - u64::from(std::mem::take(&mut self.cr));
        let content = if kept && content_len <= self.max as u64 {
            text.truncate(content_len as usize);
            Content::Text(Bytes::from(text))
        } else {
            Content::TooLong { len: content_len }
        };
        Line {
            number,
            end: self.offset,
            content,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(max: usize, chunks: &[&[u8]]) -> (Vec<Line>, Option<Line>) {
        let mut splitter = Splitter::new(max, 0, 1);
        let mut lines = Vec::new();
        for chunk in chunks {
            splitter.feed(chunk, &mut |line| lines.push(line));
        }
        (lines, splitter.finish())
    }

    fn text(number: u64, end: u64, s: &str) -> Line {
        Line {
            number,
            end,
            content: Content::Text(Bytes::copy_from_slice(s.as_bytes())),
        }
    }

    fn long(number: u64, end: u64, len: u64) -> Line {
        Line {
            number,
            end,
            content: Content::TooLong { len },
        }
    }

    #[test]
    fn lines_come_out_with_their_ends_whatever_the_chunks() {
        let input = b"one\r\ntwo\n\nthree\nfour";
        let expected = vec![
            text(1, 5, "one"),
            text(2, 9, "two"),
            text(3, 10, ""),
            text(4, 16, "three"),
        ];
        for cut in 0..input.len() {
            let (lines, last) = split(10, &[&input[..cut], &input[cut..]]);
            assert_eq!(lines, expected, "cut at {cut}");
            assert_eq!(last, Some(text(5, 20, "four")), "cut at {cut}");
        }
        let bytewise: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(split(10, &bytewise).0, expected);
    }

    #[test]
    fn the_limit_is_on_the_content_without_the_line_ending() {
        let cases: &[(&[u8], Line)] = &[
            (b"12345\n", text(1, 6, "12345")),
            (b"12345\r\n", text(1, 7, "12345")),
            (b"123456\n", long(1, 7, 6)),
            (b"123456\r\n", long(1, 8, 6)),
            (b"1234567890\n", long(1, 11, 10)),
            (b"\r\n", text(1, 2, "")),
            // A `\r` inside a line stays.
            (b"a\rb\n", text(1, 4, "a\rb")),
        ];
        for (input, line) in cases {
            let (lines, last) = split(5, &[input]);
            assert_eq!(lines, vec![line.clone()], "{input:?}");
            assert_eq!(last, None);
        }
    }

    #[test]
    fn a_long_line_is_measured_not_kept_and_the_next_line_is_whole() {
        let mut splitter = Splitter::new(4, 0, 1);
        let mut lines = Vec::new();
        for _ in 0..1000 {
            splitter.feed(&[b'x'; 1000], &mut |line| lines.push(line));
            assert!(splitter.pending.capacity() <= 1000, "kept the long line");
        }
        splitter.feed(b"\nok\n", &mut |line| lines.push(line));
        assert_eq!(
            lines,
            vec![long(1, 1_000_001, 1_000_000), text(2, 1_000_004, "ok")]
        );
        // An unterminated long line at the end.
        splitter.feed(&[b'y'; 10], &mut |line| lines.push(line));
        assert_eq!(splitter.finish(), Some(long(3, 1_000_014, 10)));
    }

    #[test]
    fn offsets_and_line_numbers_follow_the_input() {
        let mut splitter = Splitter::new(100, 50, 7);
        let mut lines = Vec::new();
        splitter.feed(b"ab\ncd", &mut |line| lines.push(line));
        assert_eq!(lines, vec![text(7, 53, "ab")]);
        assert_eq!(
            (
                splitter.offset(),
                splitter.line_start(),
                splitter.next_number()
            ),
            (55, 53, 8)
        );
        splitter.feed(b"\n", &mut |line| lines.push(line));
        assert_eq!(lines[1], text(8, 56, "cd"));
        assert_eq!(splitter.finish(), None);
    }
}
