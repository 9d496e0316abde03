"""A 泛微 e-cology E9 on 127.0.0.1 for the demo and the tests: the same REST endpoints, JSON shapes and codes.

`OASimulator(...).start()` serves the ESB authentication (regist, applytoken: RSA, tokens that expire), the
workflow API (create, submit, reject, force draw-back, force over, status, logs) over an in-memory OA with
conditional exits and countersign nodes, the HRM user list, a page at `/` to approve or reject "in OA", and
fault injection; every decision runs the node Action, an HMAC-signed callback to finflow. See server.py.
"""

from adapters.oa.simulator.demo import demo_users, demo_workflows
from adapters.oa.simulator.server import OASimulator

__all__ = ["OASimulator", "demo_users", "demo_workflows"]
