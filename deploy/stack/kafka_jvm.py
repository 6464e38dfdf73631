"""The JVM command line of Kafka's classes: heap, GC, logging, classpath, and the class-data archive.

The archive (Java's AppCDS, ``.cache/kafka/classes-<pom digest>.jsa``) holds the classes a broker
loads while starting, already parsed and verified: with it the format step and the broker start use
3.8 CPU-seconds instead of 7.3 (measured), which matters on a 2-core machine starting mlflow and
tritonserver at the same time. ``python -m deploy.kafka`` writes it; without it the JVM just loads classes.
"""

from __future__ import annotations

from pathlib import Path

from deploy.stack.kafka_jars import CACHE_DIR, LOG_CONFIG, java_binary, kafka_classpath, pom_digest

# C1 only and one compiler thread: a test broker starts in half the CPU time and never runs long
# enough for C2 to pay off. Measured ~200 MB resident after start; the heap limit holds under the suite.
JVM_OPTIONS = (
    "-Xms128m",
    "-Xmx384m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-XX:CICompilerCount=1",
    "-Djava.awt.headless=true",
)


def class_archive() -> Path:
    return CACHE_DIR / f"classes-{pom_digest()}.jsa"


def jvm_command(args_file: Path, *, dump_class_archive: Path | None = None) -> list[str]:
    """``java @args_file`` with Kafka's classpath, heap and logging: append a main class and its arguments.

    Uses the class-data archive when there is one; ``dump_class_archive`` writes one at exit instead.
    The classpath (~50 jars) goes into the argument file so ``ps`` stays readable.
    """
    java = java_binary()
    options = [*JVM_OPTIONS, f"-Dlog4j2.configurationFile={LOG_CONFIG}"]
    if dump_class_archive is not None:
        options.append(f"-XX:ArchiveClassesAtExit={dump_class_archive}")
    elif class_archive().is_file():
        options.append(f"-XX:SharedArchiveFile={class_archive()}")
    args_file.write_text("\n".join([*options, "-cp", f'"{kafka_classpath()}"']) + "\n")
    return [java, f"@{args_file}"]
