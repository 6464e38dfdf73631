"""Shared runtime of model-promoter: settings, logging, metrics and Kafka client options.

The event contracts live in :mod:`schemas`; the services in :mod:`worker` and :mod:`gateway`.
"""
