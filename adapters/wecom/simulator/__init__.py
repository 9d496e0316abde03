"""A WeCom on 127.0.0.1 for the demo and the tests: the same endpoints, JSON shapes and errcodes.

`Simulator(...).start()` serves the server API (gettoken, message/send, update_template_card, contacts,
auth/getuserinfo), the OAuth2 authorize page, an inbox per user (`/` in a browser) and fault injection; it
"clicks" a card by POSTing a correctly encrypted and signed callback to finflow. See server.py.
"""

from adapters.wecom.simulator.org import demo_org
from adapters.wecom.simulator.server import Simulator

__all__ = ["Simulator", "demo_org"]
