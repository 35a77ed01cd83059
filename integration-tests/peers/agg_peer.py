#!/usr/bin/env python3
"""Driver for the Python aggregation peers: awslabs ``aws-kinesis-agg`` and ``aiokpl``.

Usage: ``agg_peer.py PEER [REQUEST_FILE]`` where PEER is ``python`` (aws-kinesis-agg 1.2.3) or
``aiokpl`` (aiokpl 0.2.0). The request is one JSON object read from REQUEST_FILE, or from stdin
when no file is given; the answer is one JSON object on stdout. Binary data travels as base64.
The peers must be importable (PYTHONPATH = the tools dir's ``python/``).

Operations (``op``):

``encode``  ``{"sets": [{"max_size": int|null, "max_records": int|null, "keys_as_bytes": bool,
            "records": [{"pk": str, "ehk": str|null, "data": b64}]}]}``
            -> ``{"results": [{"records": [{"pk", "ehk", "data", "user_records"}], "error"}]}``:
            every Kinesis record the peer's aggregator emits for the set, in order.
``decode``  ``{"records": [{"pk": str, "seq": str, "data": b64}]}``
            -> ``{"results": [{"records": [{"pk", "ehk", "data", "sub", "aggregated"}],
            "error"}]}``: the user records the peer's deaggregator yields for each record.
``hash_keys`` ``{"keys": [str]}`` -> ``{"hash_keys": [str], "error"}``: the peer's MD5 hash key
            of each partition key, in decimal.
``bench``   ``{"workloads": [{"name", "records", "key_len", "data_len", "max_size",
            "seconds"}]}`` -> timings measured inside this process (see ``bench`` below).
"""

import base64
import contextlib
import hashlib
import io
import json
import sys
import time


def b64(data):
    return base64.b64encode(data).decode("ascii")


def unb64(text):
    return base64.b64decode(text)


def text(value):
    """A key as JSON text: the peers hand keys back as str or bytes."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return value


# --- aws-kinesis-agg (awslabs) -------------------------------------------------------------------


class AwsKinesisAgg:
    name = "python"

    def __init__(self):
        from aws_kinesis_agg import MAX_BYTES_PER_RECORD
        from aws_kinesis_agg.aggregator import AggRecord, RecordAggregator
        from aws_kinesis_agg.deaggregator import iter_deaggregate_records

        self.max_default = MAX_BYTES_PER_RECORD
        self.AggRecord = AggRecord
        self.RecordAggregator = RecordAggregator
        self.iter_deaggregate_records = iter_deaggregate_records

    @staticmethod
    def _emitted(agg_record):
        pk, ehk, data = agg_record.get_contents()
        return {
            "pk": text(pk),
            "ehk": text(ehk) if ehk else None,
            "data": b64(data),
            "user_records": agg_record.get_num_user_records(),
        }

    def encode_set(self, spec):
        max_size = spec.get("max_size") or self.max_default
        as_bytes = spec.get("keys_as_bytes", False)
        agg = self.RecordAggregator(max_size=max_size)
        out = []
        for r in spec["records"]:
            pk, ehk = r["pk"], r.get("ehk")
            if as_bytes:
                # The documented API takes str keys; bytes keys are also accepted and are the
                # only way its size accounting finds repeated keys (see cross_compat.rs).
                pk = pk.encode("utf-8")
                ehk = ehk.encode("utf-8") if ehk is not None else None
            full = agg.add_user_record(pk, unb64(r["data"]), ehk)
            if full is not None:
                out.append(self._emitted(full))
        last = agg.clear_and_get()
        if last is not None:
            out.append(self._emitted(last))
        return out

    def decode_record(self, rec):
        kinesis_record = {
            "Data": unb64(rec["data"]),
            "PartitionKey": rec["pk"],
            "SequenceNumber": rec["seq"],
            "ApproximateArrivalTimestamp": None,
        }
        out = []
        # The deaggregator reports a bad aggregate by printing to stderr and stopping.
        err = io.StringIO()
        with contextlib.redirect_stderr(err):
            for r in self.iter_deaggregate_records(kinesis_record, data_format="Boto3"):
                k = r["kinesis"]
                if k.get("aggregated"):
                    # User records carry their data base64-encoded (as Lambda delivers it).
                    data = k["data"]
                    out.append(
                        {
                            "pk": text(k["partitionKey"]),
                            "ehk": text(k["explicitHashKey"]),
                            "data": data.decode("ascii") if isinstance(data, bytes) else data,
                            "sub": k["subSequenceNumber"],
                            "aggregated": True,
                        }
                    )
                else:
                    # A record passed through keeps its raw (not base64) data in Boto3 format.
                    out.append(
                        {
                            "pk": text(k["partitionKey"]),
                            "ehk": None,
                            "data": b64(k["data"]),
                            "sub": None,
                            "aggregated": False,
                        }
                    )
        message = err.getvalue().strip()
        return out, (message.splitlines()[0] if message else None)

    def hash_key(self, pk):
        # The outer explicit hash key helper; it calls str.encode('hex'), which exists only on
        # Python 2, so on Python 3 this raises (and the aggregator never calls it).
        return text(self.AggRecord._create_explicit_hash_key(pk.encode("utf-8")))

    # Benchmark hooks: records is a list of (pk, data).
    def bench_encode(self, records, max_size, deadline):
        agg = self.RecordAggregator(max_size=max_size)
        out = []
        n = 0
        for pk, data in records:
            full = agg.add_user_record(pk, data)
            if full is not None:
                out.append(full.get_contents())
            n += 1
            if n & 255 == 0 and time.perf_counter() > deadline:
                break
        last = agg.clear_and_get()
        if last is not None:
            out.append(last.get_contents())
        return n, out

    def bench_decode_input(self, encoded):
        return [
            {
                "Data": data,
                "PartitionKey": pk,
                "SequenceNumber": str(i),
                "ApproximateArrivalTimestamp": None,
            }
            for i, (pk, _ehk, data) in enumerate(encoded)
        ]

    def bench_decode(self, kinesis_record):
        n = 0
        for _ in self.iter_deaggregate_records(kinesis_record, data_format="Boto3"):
            n += 1
        return n


# --- aiokpl ---------------------------------------------------------------------------------------


class Aiokpl:
    name = "aiokpl"

    def __init__(self):
        import anyio
        from aiokpl import (
            Aggregator,
            UserRecord,
            decode_aggregated,
            encode_aggregated,
            is_aggregated,
            md5_hash_key,
        )
        from aiokpl.shard_map import ShardMapState

        self.anyio = anyio
        self.Aggregator = Aggregator
        self.UserRecord = UserRecord
        self.decode_aggregated = decode_aggregated
        self.encode_aggregated = encode_aggregated
        self.is_aggregated = is_aggregated
        self.md5_hash_key = md5_hash_key

        class NoShardMap:
            """A shard map that is never READY: every record goes to the one catch-all batch,
            as our Aggregator has no notion of shards."""

            state = ShardMapState.INVALID

            def predict(self, hash_key):
                return None

        self.NoShardMap = NoShardMap

    def _aggregate(self, records, max_size, max_count):
        """Runs aiokpl's own Aggregator (the KPL-style reducer) over records; returns batches."""
        batches = []

        async def on_batch_ready(batch):
            batches.append(batch)

        kwargs = {
            "on_batch_ready": on_batch_ready,
            # Timers never fire: only the size/count limits and the final flush close batches.
            "record_max_buffered_time_ms": 1e12,
            # Equal deadlines, so the reducer's deadline sort keeps arrival order.
            "clock": lambda: 0.0,
        }
        if max_size:
            kwargs["aggregation_max_size"] = max_size
        if max_count:
            kwargs["aggregation_max_count"] = max_count

        async def run():
            async with self.Aggregator(self.NoShardMap(), **kwargs) as agg:
                for r in records:
                    await agg.put(r)
                await agg.flush()

        self.anyio.run(run)
        return batches

    def encode_set(self, spec):
        records = [
            self.UserRecord(r["pk"], unb64(r["data"]), r.get("ehk")) for r in spec["records"]
        ]
        out = []
        for batch in self._aggregate(records, spec.get("max_size"), spec.get("max_records")):
            out.append(
                {
                    "pk": batch.routing_partition_key(),
                    "ehk": batch.routing_explicit_hash_key(),
                    "data": b64(batch.to_blob()),
                    "user_records": batch.count,
                }
            )
        return out

    def decode_record(self, rec):
        data = unb64(rec["data"])
        # aiokpl has no pass-through deaggregator: a consumer checks is_aggregated() first, and
        # decode_aggregated() raises on anything that does not verify.
        if not self.is_aggregated(data):
            return [
                {"pk": rec["pk"], "ehk": None, "data": rec["data"], "sub": None, "aggregated": False}
            ], None
        try:
            decoded = self.decode_aggregated(data)
        except ValueError as e:
            return [], str(e)
        return [
            {
                "pk": d.partition_key,
                "ehk": d.explicit_hash_key,
                "data": b64(d.data),
                "sub": None,
                "aggregated": True,
            }
            for d in decoded
        ], None

    def hash_key(self, pk):
        return str(self.md5_hash_key(pk))

    def bench_records(self, records):
        return [self.UserRecord(pk, data) for pk, data in records]

    def bench_encode_grouped(self, groups):
        return [self.encode_aggregated(g) for g in groups]

    def bench_aggregator(self, records, max_size, deadline):
        """Encode through aiokpl's producer-side Aggregator (async reducer), time-bounded."""
        out = []
        n = 0

        async def on_batch_ready(batch):
            out.append(batch.to_blob())

        async def run():
            nonlocal n
            async with self.Aggregator(
                self.NoShardMap(),
                on_batch_ready=on_batch_ready,
                record_max_buffered_time_ms=1e12,
                aggregation_max_size=max_size,
                clock=lambda: 0.0,
            ) as agg:
                for r in records:
                    await agg.put(r)
                    n += 1
                    if n & 255 == 0 and time.perf_counter() > deadline:
                        break
                await agg.flush()

        self.anyio.run(run)
        return n, out


# --- benchmark ------------------------------------------------------------------------------------


def bench_block():
    """64 KiB of xorshift32 bytes: the shared payload source (same in agg_bench.rs, agg_peer.js)."""
    x = 0x9E3779B9
    out = bytearray(65536)
    for i in range(65536):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


def bench_records(count, key_len, data_len):
    """Record i: key "pk-" + i zero-padded to key_len chars; data: block[(i*7919) % span:][:data_len]
    with span = 65536 - data_len."""
    block = bench_block()
    span = len(block) - data_len
    digits = key_len - 3
    out = []
    for i in range(count):
        off = (i * 7919) % span
        out.append(("pk-" + str(i).zfill(digits), block[off : off + data_len]))
    return out


def input_digest(records):
    md5 = hashlib.md5()
    for pk, data in records:
        md5.update(pk.encode("utf-8"))
        md5.update(data)
    return md5.hexdigest()


def timed_passes(run_pass, seconds):
    """Runs run_pass(deadline) -> (count, extra) until `seconds` of work; returns count, elapsed,
    and the extra of the first pass."""
    start = time.perf_counter()
    deadline = start + seconds
    total = 0
    first = None
    while True:
        count, extra = run_pass(deadline)
        total += count
        if first is None:
            first = extra
        if time.perf_counter() >= deadline:
            break
    return total, time.perf_counter() - start, first


def bench(peer, spec):
    records = bench_records(spec["records"], spec["key_len"], spec["data_len"])
    digest = input_digest(records)
    seconds = spec["seconds"]
    max_size = spec["max_size"]
    results = {"name": spec["name"], "input_md5": digest}

    if isinstance(peer, AwsKinesisAgg):
        # max_size bounds the aggregate's data; our limit counts the outer key "a" too.
        size = max_size - 1
        n, elapsed, encoded = timed_passes(lambda d: peer.bench_encode(records, size, d), seconds)
        blobs = [data for _pk, _ehk, data in encoded]
        results["encode"] = enc_result(n, elapsed, blobs)
        kinesis_records = peer.bench_decode_input(encoded)
        n, elapsed = timed_cycle(kinesis_records, peer.bench_decode, seconds)
        results["decode"] = {"records": n, "seconds": elapsed}
    else:
        users = peer.bench_records(records)
        # Producer path: aiokpl's Aggregator (size estimator + async reducer + encode_aggregated).
        n, elapsed, blobs = timed_passes(
            lambda d: peer.bench_aggregator(users, max_size, d), seconds
        )
        results["encode"] = enc_result(n, elapsed, blobs)
        # Codec only: encode_aggregated over the same groups, grouped before the clock starts.
        groups = []
        pos = 0
        for blob in blobs:
            k = len(peer.decode_aggregated(blob)) if peer.is_aggregated(blob) else 1
            groups.append(users[pos : pos + k])
            pos += k
        n, elapsed = timed_cycle(groups, lambda g: (peer.encode_aggregated(g), len(g))[1], seconds)
        results["variants"] = [
            {
                "label": "codec only: encode_aggregated on pre-formed groups",
                "encode": {"records": n, "seconds": elapsed},
            }
        ]
        n, elapsed = timed_cycle(blobs, lambda b: len(peer.decode_aggregated(b)), seconds)
        results["decode"] = {"records": n, "seconds": elapsed}
    return results


def enc_result(n, elapsed, blobs):
    return {
        "records": n,
        "seconds": elapsed,
        "aggregates": len(blobs),
        "bytes": sum(len(b) for b in blobs),
    }


def timed_cycle(items, work, seconds):
    """Applies work(item) -> user-record count to items in a cycle for `seconds`."""
    start = time.perf_counter()
    deadline = start + seconds
    total = 0
    while True:
        for item in items:
            total += work(item)
        if time.perf_counter() >= deadline:
            break
    return total, time.perf_counter() - start


# --- main -----------------------------------------------------------------------------------------


def main():
    if len(sys.argv) < 2 or sys.argv[1] not in ("python", "aiokpl"):
        sys.exit("usage: agg_peer.py {python|aiokpl} [REQUEST_FILE]")
    peer = AwsKinesisAgg() if sys.argv[1] == "python" else Aiokpl()
    if len(sys.argv) > 2:
        with open(sys.argv[2], "rb") as f:
            request = json.load(f)
    else:
        request = json.load(sys.stdin.buffer)

    op = request["op"]
    if op == "encode":
        results = []
        for spec in request["sets"]:
            try:
                results.append({"records": peer.encode_set(spec), "error": None})
            except Exception as e:  # the peer rejects the set: report, keep going
                results.append({"records": [], "error": f"{type(e).__name__}: {e}"})
        answer = {"results": results}
    elif op == "decode":
        results = []
        for rec in request["records"]:
            try:
                records, error = peer.decode_record(rec)
            except Exception as e:
                records, error = [], f"{type(e).__name__}: {e}"
            results.append({"records": records, "error": error})
        answer = {"results": results}
    elif op == "hash_keys":
        try:
            answer = {"hash_keys": [peer.hash_key(k) for k in request["keys"]], "error": None}
        except Exception as e:
            answer = {"hash_keys": [], "error": f"{type(e).__name__}: {e}"}
    elif op == "bench":
        answer = {"results": [bench(peer, w) for w in request["workloads"]]}
    else:
        sys.exit(f"unknown op {op!r}")
    sys.stdout.write(json.dumps(answer))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
