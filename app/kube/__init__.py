"""Ostiary in a cluster: policies, secrets, service accounts and workload owners from the Kubernetes API.

``KubeRuntime`` (runtime.py) is the entry point ``ostiary serve --kube`` uses; client.py is the
JSON client, source.py the policy list + watch, store.py the secret/service-account reader,
owners.py the ownerReference check.
"""
