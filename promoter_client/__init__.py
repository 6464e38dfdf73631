"""What DAGs, notebooks and the ``promoter`` command import to drive promotions from code.

from promoter_client import request_promotion, request_preparation, publish_routing, update_routing, RoutingChange
"""

from promoter_client.promotion import Outcome, request_preparation, request_promotion
from promoter_client.routing import RoutingChange, publish_routing, update_routing

__all__ = ["Outcome", "RoutingChange", "publish_routing", "request_preparation", "request_promotion", "update_routing"]
