"""The MLflow flavors the worker serves: one module per flavor, found by :mod:`worker.flavors.catalog`.

A flavor module defines ``FLAVOR``, an object of the :class:`worker.flavors.flavor.Flavor`
protocol: which MLmodel it recognises, the ``serving.json`` spec it plans, the files it stages
into the Triton version directory and the Triton backend it needs. Adding a flavor is adding a
module here (and its test); the catalog picks it up.
"""
