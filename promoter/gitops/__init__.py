"""The GitOps repository's scaffolding from promoter.yaml (`promoter gitops init`)."""
