"""What runs model-promoter: the local stack (``deploy.stack``), Kubernetes manifests, dashboards."""
