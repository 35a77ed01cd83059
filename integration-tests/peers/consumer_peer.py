"""One kcl-rs worker (a Rust port of the Java KCL 3, with Python bindings), speaking the same line
protocol as our `consumer-worker` so that the consumer benchmark drives both alike.

Arguments: --kinesis URL --dynamodb URL --stream S --application A --worker-id W [--quiet]
[--polling [--idle-ms MS]] (other flags of our worker are accepted and ignored; --idle-ms sets
kcl-rs's idle_time_between_reads_millis, 1,500 ms by its default). Prints on stdout:

    START <shard>     a processor was initialized
    REC <shard> <seq> <subseq> <data>   a record was processed (without --quiet; data as UTF-8)
    COUNT <records>   with --quiet: records processed so far, every 20 ms while it changes
    LOST <shard>      lease lost
    END <shard>       shard ended and checkpointed
    STOP <shard>      shutdown requested; checkpointed
    EXIT              shut down (after SIGTERM or the end of stdin)
"""

import os
import signal
import sys
import threading
import time

ARGS = {}
QUIET = False
POLLING = False
argv = sys.argv[1:]
i = 0
while i < len(argv):
    flag = argv[i]
    if flag == "--quiet":
        QUIET = True
        i += 1
    elif flag == "--polling":
        POLLING = True
        i += 1
    else:
        ARGS[flag] = argv[i + 1]
        i += 2

# kcl-rs reads its endpoints from the environment (peers.md).
os.environ["AWS_ENDPOINT_URL_KINESIS"] = ARGS["--kinesis"]
os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = ARGS["--dynamodb"]
os.environ["AWS_ENDPOINT_URL_CLOUDWATCH"] = ARGS["--kinesis"]
os.environ.setdefault("AWS_ACCESS_KEY_ID", "AKID")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "SECRET")
os.environ.setdefault("AWS_REGION", "us-east-1")
# kcl-rs warns about every CloudWatch publish it cannot make (there is no CloudWatch here).
os.environ["RUST_LOG"] = os.environ.get("KCL_RS_LOG", "error")

from kcl_rs import RecordProcessorBase, Scheduler  # noqa: E402

LOCK = threading.Lock()
COUNT = [0]


def say(line):
    with LOCK:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Processor(RecordProcessorBase):
    def __init__(self):
        self.shard = "?"

    def initialize(self, initialize_input):
        self.shard = initialize_input.shard_id or "?"
        say("START " + self.shard)

    def process_records(self, process_records_input):
        records = process_records_input.records
        with LOCK:
            COUNT[0] += len(records)
        if records and not QUIET:
            say("\n".join(
                "REC %s %s %d %s" % (self.shard, r.sequence_number, r.sub_sequence_number,
                                     r.data.decode("utf-8", "replace"))
                for r in records
            ))
        try:
            process_records_input.checkpointer.checkpoint()
        except Exception:  # a lost lease: the next owner replays
            pass

    def lease_lost(self, lease_lost_input):
        say("LOST " + self.shard)

    def shard_ended(self, shard_ended_input):
        shard_ended_input.checkpointer.checkpoint()
        say("END " + self.shard)

    def shutdown_requested(self, shutdown_requested_input):
        try:
            shutdown_requested_input.checkpointer.checkpoint()
        except Exception:
            pass
        say("STOP " + self.shard)


def polling_options():
    """kcl-rs's polling settings given on the command line (it refuses them with fan-out)."""
    if POLLING and "--idle-ms" in ARGS:
        return {"idle_time_between_reads_millis": int(ARGS["--idle-ms"])}
    return {}


def main():
    scheduler = Scheduler(
        stream_name=ARGS["--stream"],
        application_name=ARGS["--application"],
        record_processor_factory=Processor,
        worker_identifier=ARGS.get("--worker-id"),
        region="us-east-1",
        initial_position="TRIM_HORIZON",
        retrieval_mode="POLLING" if POLLING else "FANOUT",
        **polling_options(),
    )
    scheduler.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())

    def watch_stdin():
        try:
            while sys.stdin.read(64):
                pass
        except Exception:
            pass
        done.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    reported = 0
    while not done.wait(0.02):
        if QUIET:
            with LOCK:
                now = COUNT[0]
            if now != reported:
                reported = now
                say("COUNT %d" % now)
    scheduler.shutdown()
    say("EXIT")


if __name__ == "__main__":
    main()
