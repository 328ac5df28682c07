"""promoter: GitOps promotion from the MLflow Model Registry to GitLab and GPU clusters."""

__version__ = "0.1.0"
