#!/usr/bin/env node
// Driver for the Node aggregation peer, npm `aws-kinesis-agg` 4.2.8.
//
// Usage: `node agg_peer.js [REQUEST_FILE]`, with NODE_PATH = the tools dir's `node/node_modules`.
// Reads one JSON request from REQUEST_FILE (or stdin), writes one JSON answer on stdout; binary
// data travels as base64. Same protocol as agg_peer.py:
//
//   encode  {"sets": [{"max_size": int|null, "records": [{"pk", "ehk"|null, "data": b64}]}]}
//           -> {"results": [{"records": [{"pk", "ehk", "data", "user_records"}], "error"}]}
//   decode  {"records": [{"pk", "seq", "data": b64}]}
//           -> {"results": [{"records": [{"pk", "ehk", "data", "sub", "aggregated"}], "error"}]}
//   bench   {"workloads": [{"name", "records", "key_len", "data_len", "max_size", "seconds"}]}
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const agg = require('aws-kinesis-agg');

// The library's aggregators hold at most 1 MiB - 20 bytes of protobuf (not configurable).
const MAGIC_AND_MD5 = 20;

function toUserRecord(r) {
  const rec = { partitionKey: r.pk, data: Buffer.from(r.data, 'base64') };
  if (r.ehk !== null && r.ehk !== undefined) {
    rec.explicitHashKey = r.ehk;
  }
  return rec;
}

function emitted(encoded, userRecords) {
  return {
    pk: encoded.partitionKey === undefined ? null : encoded.partitionKey,
    // generateEncodedRecord names this field with a capital E, unlike partitionKey and data.
    ehk: encoded.ExplicitHashKey === undefined ? null : encoded.ExplicitHashKey,
    data: Buffer.from(encoded.data).toString('base64'),
    user_records: userRecords,
  };
}

// Encodes one set. Without max_size: RecordAggregator.aggregateRecords, the library's own loop at
// its fixed 1 MiB limit. With max_size: the same RecordAggregator driven through its public
// calculateUserRecordSize / addUserRecord / build, closing the aggregate where its own size
// accounting says max_size (magic and MD5 included) would be exceeded.
function encodeSet(spec) {
  const records = spec.records.map(toUserRecord);
  const out = [];
  const errors = [];
  if (!spec.max_size) {
    const aggregator = new agg.RecordAggregator();
    aggregator.aggregateRecords(records, true, (err, encoded) => {
      if (err) {
        errors.push(String(err.message || err));
      } else {
        out.push(emitted(encoded, null));
      }
    });
  } else {
    const limit = spec.max_size - MAGIC_AND_MD5;
    const aggregator = new agg.RecordAggregator();
    for (const rec of records) {
      const size = aggregator.calculateUserRecordSize(rec);
      if (aggregator.length() > 0 && aggregator.totalBytes + size > limit) {
        const count = aggregator.length();
        out.push(emitted(aggregator.build(), count));
      }
      aggregator.addUserRecord(rec);
    }
    if (aggregator.length() > 0) {
      const count = aggregator.length();
      out.push(emitted(aggregator.build(), count));
    }
  }
  return { records: out, error: errors.length ? errors.join('; ') : null };
}

function decodeRecord(rec) {
  let records = [];
  const errors = [];
  // deaggregateSync calls back once per failing user record (with the records so far) and once
  // at the end; a bad checksum or protobuf is one error and no records.
  agg.deaggregateSync(
    { partitionKey: rec.pk, sequenceNumber: rec.seq, data: rec.data },
    true,
    (err, userRecords) => {
      if (err) {
        errors.push(String(err.message || err));
      }
      if (userRecords) {
        records = userRecords;
      }
    },
  );
  return {
    records: records.map((u) => ({
      pk: u.partitionKey === undefined ? null : u.partitionKey,
      ehk: u.explicitPartitionKey === undefined ? null : u.explicitPartitionKey,
      data: u.data,
      sub: u.subSequenceNumber === undefined ? null : u.subSequenceNumber,
      // A record passed through has no subSequenceNumber: that is how the library tells them apart.
      aggregated: u.subSequenceNumber !== undefined,
    })),
    error: errors.length ? errors[0] : null,
  };
}

// --- benchmark -----------------------------------------------------------------------------------

// 64 KiB of xorshift32 bytes: the shared payload source (same in agg_bench.rs and agg_peer.py).
function benchBlock() {
  let x = 0x9e3779b9;
  const out = Buffer.alloc(65536);
  for (let i = 0; i < 65536; i++) {
    x = (x ^ (x << 13)) >>> 0;
    x = (x ^ (x >>> 17)) >>> 0;
    x = (x ^ (x << 5)) >>> 0;
    out[i] = x & 0xff;
  }
  return out;
}

function benchRecords(count, keyLen, dataLen) {
  const block = benchBlock();
  const span = block.length - dataLen;
  const out = new Array(count);
  for (let i = 0; i < count; i++) {
    const off = (i * 7919) % span;
    out[i] = {
      partitionKey: 'pk-' + String(i).padStart(keyLen - 3, '0'),
      data: block.subarray(off, off + dataLen),
    };
  }
  return out;
}

function inputDigest(records) {
  const md5 = crypto.createHash('md5');
  for (const r of records) {
    md5.update(Buffer.from(r.partitionKey, 'utf8'));
    md5.update(r.data);
  }
  return md5.digest('hex');
}

const now = () => Number(process.hrtime.bigint()) / 1e9;

function benchEncodePass(records, maxSize, deadline) {
  const limit = maxSize - MAGIC_AND_MD5;
  const aggregator = new agg.RecordAggregator();
  const out = [];
  let n = 0;
  for (const rec of records) {
    const size = aggregator.calculateUserRecordSize(rec);
    if (aggregator.length() > 0 && aggregator.totalBytes + size > limit) {
      out.push(aggregator.build());
    }
    aggregator.addUserRecord(rec);
    n++;
    if ((n & 255) === 0 && now() > deadline) {
      break;
    }
  }
  if (aggregator.length() > 0) {
    out.push(aggregator.build());
  }
  return [n, out];
}

function bench(spec) {
  const records = benchRecords(spec.records, spec.key_len, spec.data_len);
  const result = { name: spec.name, input_md5: inputDigest(records) };
  // Our limit counts the outer partition key "a" too: one byte less of data.
  const maxSize = spec.max_size - 1;

  let start = now();
  let deadline = start + spec.seconds;
  let n = 0;
  let encoded = null;
  for (;;) {
    const [count, out] = benchEncodePass(records, maxSize, deadline);
    n += count;
    if (encoded === null) {
      encoded = out;
    }
    if (now() >= deadline) {
      break;
    }
  }
  result.encode = {
    records: n,
    seconds: now() - start,
    aggregates: encoded.length,
    bytes: encoded.reduce((sum, e) => sum + e.data.length, 0),
  };

  // Variant: the library's own loop, RecordAggregator.aggregateRecords, at its fixed 1 MiB limit
  // (fed in chunks of 256 records so the clock can be checked).
  start = now();
  deadline = start + spec.seconds;
  n = 0;
  for (;;) {
    const aggregator = new agg.RecordAggregator();
    const sink = [];
    const onReady = (err, encoded) => {
      if (err) {
        throw err;
      }
      sink.push(encoded);
    };
    let stop = false;
    for (let i = 0; i < records.length && !stop; i += 256) {
      const chunk = records.slice(i, i + 256);
      aggregator.aggregateRecords(chunk, false, onReady);
      n += chunk.length;
      stop = now() > deadline;
    }
    aggregator.flushBufferedRecords(onReady);
    if (now() >= deadline) {
      break;
    }
  }
  result.variants = [
    {
      label: 'aggregateRecords, its fixed 1 MiB limit',
      encode: { records: n, seconds: now() - start },
    },
  ];

  // deaggregateSync takes the data base64-encoded, as Lambda delivers it: converted beforehand.
  const inputs = encoded.map((e, i) => ({
    partitionKey: e.partitionKey,
    sequenceNumber: String(i),
    data: e.data.toString('base64'),
  }));
  start = now();
  deadline = start + spec.seconds;
  n = 0;
  const count = (err, userRecords) => {
    if (err) {
      throw err;
    }
    n += userRecords.length;
  };
  for (;;) {
    for (const input of inputs) {
      agg.deaggregateSync(input, true, count);
    }
    if (now() >= deadline) {
      break;
    }
  }
  result.decode = { records: n, seconds: now() - start };
  return result;
}

// --- main ----------------------------------------------------------------------------------------

function main() {
  const source = process.argv[2] ? process.argv[2] : 0; // 0 = stdin
  const request = JSON.parse(fs.readFileSync(source, 'utf8'));
  let answer;
  switch (request.op) {
    case 'encode':
      answer = {
        results: request.sets.map((spec) => {
          try {
            return encodeSet(spec);
          } catch (e) {
            return { records: [], error: String(e.message || e) };
          }
        }),
      };
      break;
    case 'decode':
      answer = {
        results: request.records.map((rec) => {
          try {
            return decodeRecord(rec);
          } catch (e) {
            return { records: [], error: String(e.message || e) };
          }
        }),
      };
      break;
    case 'bench':
      answer = { results: request.workloads.map(bench) };
      break;
    default:
      process.stderr.write(`unknown op ${request.op}\n`);
      process.exit(2);
  }
  process.stdout.write(JSON.stringify(answer) + '\n');
}

main();
