"""Apache Kafka for the local stack: the Maven build file that names its jars, and their cached classpath."""
