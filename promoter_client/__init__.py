"""What DAGs, notebooks and the ``promoter`` command import to drive promotions from code.

from promoter_client import request_promotion, publish_routing
"""

from promoter_client.promotion import Outcome, request_promotion
from promoter_client.routing import publish_routing

__all__ = ["Outcome", "publish_routing", "request_promotion"]
