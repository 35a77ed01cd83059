#!/usr/bin/env python3
"""Producer driver for the ``aiokpl`` peer: writes records to a Kinesis endpoint with aiokpl's
``Producer`` and reports what it cost, measured inside this process.

Usage: ``producer_peer.py [REQUEST_FILE]``. The request is one JSON object read from REQUEST_FILE,
or from stdin when no file is given (see ``ProduceRequest`` in ``src/peers.rs``); the answer is one
JSON object on stdout (``ProduceReport``). aiokpl must be importable (PYTHONPATH = the tools dir's
``python/``).

Record ``i`` has the partition key ``keys[i % len(keys)]`` (the request's list of keys) and the
data ``i.to_bytes(8, "little") + block[o:o + data_len - 8]`` with
``o = (i * 7919) % (len(block) - (data_len - 8))`` and ``block`` the 64 KiB xorshift32 block of
``agg_peer.py`` (the same as ``produce_record_data`` in ``src/peers.rs``).

Timing: ``generate`` is a pass that only builds the keys and data; ``produce`` runs from building
the producer to the close of its context (the same generation done inline, ``put_record`` for
every record, ``await outcome.wait()`` for every outcome). CPU is ``resource.getrusage
(RUSAGE_SELF)``: every thread of this process (aiobotocore's included), not the server's.
Interpreter start-up and imports are outside both.
"""

import asyncio
import json
import resource
import sys
import time

CHUNK = 10_000


def bench_block():
    """64 KiB of xorshift32 low bytes from 0x9E3779B9 (same as agg_peer.py, peers.rs)."""
    x = 0x9E3779B9
    out = bytearray(65536)
    for i in range(65536):
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        out[i] = x & 0xFF
    return bytes(out)


class Clock:
    """CPU (user, system) and wall time since creation."""

    def __init__(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        self.user, self.system = usage.ru_utime, usage.ru_stime
        self.wall = time.perf_counter()

    def elapsed(self):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "cpu_user": usage.ru_utime - self.user,
            "cpu_system": usage.ru_stime - self.system,
            "wall": time.perf_counter() - self.wall,
        }


def generate_only(n, keys, block, filler):
    """The record generation of ``produce`` without the producer."""
    span = len(block) - filler
    nkeys = len(keys)
    sink = None
    for i in range(n):
        o = (i * 7919) % span
        data = i.to_bytes(8, "little") + block[o : o + filler]
        sink = (keys[i % nkeys], data)
    return sink


async def produce(req, keys, block, filler):
    from aiokpl import Config, Producer

    config = Config(
        region=req["region"],
        endpoint_url=req["endpoint"],
        verify_ssl=False,
        aws_access_key_id="AKID",
        aws_secret_access_key="SECRET",
        # The stand-in enforces no limits here: keep aiokpl's own limiter out of the way.
        rate_limit_records_per_sec_per_shard=float(req["rate_limit_records_per_shard"]),
        rate_limit_bytes_per_sec_per_shard=float(req["rate_limit_bytes_per_shard"]),
    )
    stream = req["stream"]
    n = req["records"]
    span = len(block) - filler
    nkeys = len(keys)
    tally = {"succeeded": 0, "failed": 0, "failures": {}, "attempts": 0, "resolved": 0}

    # Outcomes are awaited by a consumer task while records are still being put, in chunks, as
    # the Rust side awaits its receipts.
    queue = asyncio.Queue()

    async def consume():
        while True:
            chunk = await queue.get()
            if chunk is None:
                return
            for outcome in chunk:
                result = await outcome.wait()
                tally["resolved"] += 1
                tally["attempts"] += len(result.attempts)
                if result.success:
                    tally["succeeded"] += 1
                else:
                    tally["failed"] += 1
                    code = result.attempts[-1].error_code if result.attempts else "none"
                    tally["failures"][code] = tally["failures"].get(code, 0) + 1

    clock = Clock()
    async with Producer(config) as producer:
        consumer = asyncio.ensure_future(consume())
        chunk = []
        for i in range(n):
            o = (i * 7919) % span
            data = i.to_bytes(8, "little") + block[o : o + filler]
            chunk.append(
                await producer.put_record(
                    stream=stream, partition_key=keys[i % nkeys], data=data
                )
            )
            if len(chunk) == CHUNK:
                queue.put_nowait(chunk)
                chunk = []
        queue.put_nowait(chunk)
        queue.put_nowait(None)
        # flush() sends what is buffered but does not wait for outcomes: the consumer does.
        await producer.flush()
        try:
            await asyncio.wait_for(consumer, timeout=req["timeout_seconds"])
        except asyncio.TimeoutError:
            pass
    produced = clock.elapsed()
    return tally, produced, describe(config)


def describe(config):
    """The settings, credentials left out."""
    import dataclasses

    hidden = {"aws_access_key_id", "aws_secret_access_key", "aws_session_token", "metrics_sink"}
    fields = [f.name for f in dataclasses.fields(config) if f.name not in hidden]
    return ", ".join(f"{name}={getattr(config, name)!r}" for name in fields)


def main():
    if len(sys.argv) > 1:
        with open(sys.argv[1], encoding="utf-8") as f:
            req = json.load(f)
    else:
        req = json.load(sys.stdin)
    n = req["records"]
    keys = req["keys"]
    block = bench_block()
    filler = req["data_len"] - 8

    clock = Clock()
    generate_only(n, keys, block, filler)
    generated = clock.elapsed()

    tally, produced, config = asyncio.run(produce(req, keys, block, filler))
    json.dump(
        {
            "records": n,
            "succeeded": tally["succeeded"],
            "failed": tally["failed"],
            "failures": tally["failures"],
            "unresolved": n - tally["resolved"],
            "attempts": tally["attempts"],
            "produce": produced,
            "generate": generated,
            "config": config,
            "python": sys.version.split()[0],
        },
        sys.stdout,
    )


if __name__ == "__main__":
    main()
