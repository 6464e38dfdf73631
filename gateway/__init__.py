"""The gateway: stateless replicas that route inference to the served model version."""
