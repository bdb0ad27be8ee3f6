"""Running `cmsdl train` on Kubernetes: manifests, submission, status and logs, and a Hydra sweep launcher."""
