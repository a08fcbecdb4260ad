"""What ``langgraph.json`` serves: the cascade graph factory from :mod:`mmroute.graph.served`.

A file, not a package (langgraph-api loads it by path); everything it serves ships in the
``mmroute`` wheel, example data included. The local LiteLLM price map is chosen here, before
anything imports litellm (see ``mmroute.offline``); set ``LITELLM_LOCAL_MODEL_COST_MAP=False``
in the server's environment to fetch the remote one.
"""

from mmroute.offline import use_local_cost_map

use_local_cost_map()

from mmroute.graph.served import graph, make_graph, served_graph  # noqa: E402

__all__ = ["graph", "make_graph", "served_graph"]
