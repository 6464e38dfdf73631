"""The classpath of the Apache Kafka broker, resolved from Maven Central by ``deploy/kafka/pom.xml``.

``python -m deploy.kafka`` (run by the Makefile) resolves it once per version of the pom: the result
is cached in ``.cache/kafka/classpath-<pom digest>.txt`` (git-ignored), and the jars stay in Maven's
local repository (``~/.m2``). :func:`kafka_classpath` reads that cache for the stack.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from deploy.stack.errors import StackError

KAFKA_DIR = Path(__file__).resolve().parents[1] / "kafka"
POM = KAFKA_DIR / "pom.xml"
LOG_CONFIG = KAFKA_DIR / "log4j2.properties"
CACHE_DIR = KAFKA_DIR.parents[1] / ".cache" / "kafka"
MIN_JAVA = 17
RESOLVE_COMMAND = "make kafka (or: python -m deploy.kafka)"


def pom_digest() -> str:
    return hashlib.sha256(POM.read_bytes()).hexdigest()[:16]


def cache_file() -> Path:
    return CACHE_DIR / f"classpath-{pom_digest()}.txt"


def cached_classpath() -> str | None:
    """The cached classpath of the current pom when every jar it names is still there, else None."""
    try:
        classpath = cache_file().read_text().strip()
    except FileNotFoundError:
        return None
    jars = classpath.split(os.pathsep)
    return classpath if jars and all(Path(jar).is_file() for jar in jars) else None


def kafka_classpath() -> str:
    """The broker's classpath, or :class:`StackError` saying how to resolve it."""
    classpath = cached_classpath()
    if classpath is None:
        raise StackError(f"Apache Kafka's jars are not resolved for {POM.name} as it is now: run {RESOLVE_COMMAND}")
    return classpath


def java_binary() -> str:
    """``java`` from PATH, or :class:`StackError` naming what to install."""
    java = shutil.which("java")
    if java is None:
        raise StackError(
            f"java not found: Apache Kafka needs a Java {MIN_JAVA}+ runtime on PATH "
            "(Debian: apt-get install openjdk-17-jre-headless)"
        )
    return java


def java_major_version(java: str) -> int:
    """The major version ``java -version`` reports (``17`` for ``openjdk version "17.0.15"``)."""
    banner = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if match is None:
        raise StackError(f"cannot tell the Java version from `{java} -version`: {banner.strip()}")
    major = int(match.group(1))
    # Java 8 and older say "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def _maven_binary() -> str:
    maven = shutil.which("mvn")
    if maven is None:
        raise StackError("mvn not found: resolving Apache Kafka's jars needs Maven 3 (Debian: apt-get install maven)")
    return maven


def resolve(maven_repo: Path | None = None) -> str:
    """Run Maven on the pom, write the classpath to the cache and return it (always resolves)."""
    java = java_binary()
    if (major := java_major_version(java)) < MIN_JAVA:
        raise StackError(f"{java} is Java {major}: Apache Kafka 4 needs Java {MIN_JAVA}+")
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    target = cache_file()
    partial = target.with_suffix(".partial")
    command = [_maven_binary(), "-q", "-B", "-f", str(POM), "dependency:build-classpath"]
    command.append(f"-Dmdep.outputFile={partial}")
    if maven_repo is not None:
        command.append(f"-Dmaven.repo.local={maven_repo}")
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).strip().splitlines()[-20:]
        raise StackError("Maven could not resolve Apache Kafka's jars:\n" + "\n".join(output))
    partial.replace(target)
    return target.read_text().strip()
