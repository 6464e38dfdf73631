"""The real local stack: Apache Kafka (or tansu), ``mlflow server`` and ``tritonserver`` on loopback.

``LocalStack(run_dir).start()`` (or ``with LocalStack(run_dir) as stack:``) is what ``promoter-stack up``,
the test session's ``local_stack`` fixture and the demo use; ``stack.client_env()`` is the environment
a project service needs to talk to it.
"""

from deploy.stack.errors import StackError
from deploy.stack.local_stack import LocalStack, StackInfo
from deploy.stack.ports import StackPorts

__all__ = ["LocalStack", "StackError", "StackInfo", "StackPorts"]
