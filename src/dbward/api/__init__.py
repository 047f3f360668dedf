"""The control plane: REST API under /api/v1, the web console and its SQL editor.

``create_app`` (in ``api/app.py``) builds the ASGI app from a running :class:`~dbward.node.Node`;
nothing here holds module-level state.
"""

from __future__ import annotations
