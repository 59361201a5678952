"""An in-repo Kubernetes API server fake for tests, built against recorded transcripts of a real
v1.36 API server (shared/reference/kube-api): see server.FakeApiServer.
"""

from kubefake.resources import ApiError, Resource
from kubefake.server import FakeApiServer

__all__ = ["ApiError", "FakeApiServer", "Resource"]
