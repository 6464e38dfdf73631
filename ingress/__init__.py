"""The ingress: MLflow registry webhooks in, verified promotion requests out on Kafka."""
