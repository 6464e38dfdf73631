"""The ``promoter`` command: promotions, traffic policy, serving status and dead letters, for people."""
