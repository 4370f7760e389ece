"""The intent fleet's LiteLLM stays local: building its Router looks up no host name, so
LiteLLM's model cost map comes from its bundled copy, not the network (issue 28)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import socket
looked_up = []
def refuse(host, *args, **kwargs):
    looked_up.append(host)
    raise socket.gaierror("offline")
socket.getaddrinfo = refuse
from userlm.data_prep.fleet import Fleet, FleetClient
FleetClient(Fleet(base_urls=("http://127.0.0.1:9/v1", "http://127.0.0.1:10/v1"), model="m"))
print("looked up:", sorted(set(looked_up)))
"""


def test_the_fleet_imports_litellm_without_reaching_out():
    env = {k: v for k, v in os.environ.items() if k != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "looked up: []" in done.stdout, done.stdout + done.stderr
