"""``python -m deploy.kafka`` (``make kafka``): resolve Apache Kafka's jars and write the class-data archive.

Does nothing when both are cached for the current pom, or when the stack runs tansu.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from deploy.stack.apache_kafka import apache_kafka_spec
from deploy.stack.errors import StackError
from deploy.stack.kafka_jars import CACHE_DIR, cache_file, cached_classpath, resolve
from deploy.stack.kafka_jvm import class_archive
from deploy.stack.ports import free_ports
from deploy.stack.process import ManagedProcess, stop_all, wait_all_ready
from deploy.stack.settings import StackSettings


def _say(message: str) -> None:
    print(f"deploy.kafka: {message}", file=sys.stderr, flush=True)


def write_class_archive(target: Path) -> None:
    """Start a broker once with ``-XX:ArchiveClassesAtExit``, stop it, keep the archive it wrote."""
    with tempfile.TemporaryDirectory(prefix="kafka-class-archive-") as scratch:
        run_dir = Path(scratch)
        partial = run_dir / "classes.jsa"
        (port,) = free_ports(1)
        broker = ManagedProcess(apache_kafka_spec(port, run_dir, dump_class_archive=partial), run_dir / "kafka.log")
        broker.start()
        try:
            wait_all_ready([broker])
        finally:
            stop_all([broker])
        if not partial.is_file():
            raise StackError(f"the broker wrote no class-data archive: {broker.tail()}")
        partial.replace(target)


def remove_stale_cache() -> list[Path]:
    """Delete what earlier versions of the pom left in the cache (each jar list or archive is ~50 MB at most)."""
    current = {cache_file(), class_archive()}
    stale = [path for path in CACHE_DIR.glob("*") if path not in current]
    for path in stale:
        path.unlink()
    return stale


def main() -> int:
    if StackSettings().kafka_broker != "kafka":
        _say("PROMOTER_STACK_KAFKA_BROKER is tansu: nothing to resolve")
        return 0
    try:
        if cached_classpath() is None:
            began = time.monotonic()
            jars = len(resolve().split(os.pathsep))
            _say(f"resolved {jars} jars in {time.monotonic() - began:.1f} s")
        if not class_archive().is_file():
            began = time.monotonic()
            write_class_archive(class_archive())
            _say(f"wrote the class-data archive in {time.monotonic() - began:.1f} s")
        remove_stale_cache()
    except StackError as error:
        _say(f"error: {error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
