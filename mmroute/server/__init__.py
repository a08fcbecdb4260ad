"""Serving the router over HTTP: an OpenAI-compatible server (``create_app``) and a LiteLLM
proxy routing strategy (``litellm_proxy``)."""

from __future__ import annotations

from .app import create_app
from .service import FeedbackSink, RouterService, ServerConfig
from .batching import FeatureBatcher
from .decisions import DecisionRecord, RecentDecisions
from .metrics import ServerMetrics
from .runner import BackgroundServer, serve

__all__ = ["BackgroundServer", "DecisionRecord", "FeatureBatcher", "FeedbackSink", "RecentDecisions",
           "RouterService", "ServerConfig", "ServerMetrics", "create_app", "serve"]
