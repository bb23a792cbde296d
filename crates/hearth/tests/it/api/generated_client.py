"""Drives hearth serve through a client generated from its OpenAPI document.

Usage: generated_client.py BASE_URL API_KEY DIR, where DIR holds the generated package
`hearth_client`. Prints `ok` once create -> exec -> delete worked; fails loudly otherwise.
"""

import sys

base_url, key, package_dir = sys.argv[1:4]
sys.path.insert(0, package_dir)

import httpx  # noqa: E402
from hearth_client import AuthenticatedClient  # noqa: E402
from hearth_client.api.exec_ import exec_exec  # noqa: E402
from hearth_client.api.sandboxes import (  # noqa: E402
    sandboxes_create,
    sandboxes_delete,
    sandboxes_get,
    sandboxes_list,
)
from hearth_client.models import (  # noqa: E402
    CreateSandbox,
    CreateSandboxLabels,
    ErrorBody,
    ExecBody,
    ExecResult,
    NetworkMode,
    NetworkRequest,
    Sandbox,
)

# Boots take seconds under TCG; httpx's default 5 s would cut them off.
timeout = httpx.Timeout(300.0)
client = AuthenticatedClient(base_url=base_url, token=key, timeout=timeout)

refused = sandboxes_list.sync_detailed(
    client=AuthenticatedClient(base_url=base_url, token="wrong", timeout=timeout)
)
assert refused.status_code == 401, refused
assert isinstance(refused.parsed, ErrorBody), refused.parsed
assert refused.parsed.error.code == "unauthorized", refused.parsed

labels = CreateSandboxLabels.from_dict({"made-by": "openapi-python-client"})
created = sandboxes_create.sync(
    client=client,
    body=CreateSandbox(
        name="generated", network=NetworkRequest(mode=NetworkMode.NONE), labels=labels
    ),
)
assert isinstance(created, Sandbox), created
assert created.state == "running", created
assert created.labels.to_dict() == {"made-by": "openapi-python-client"}, created.labels

result = exec_exec.sync(
    "generated",
    client=client,
    body=ExecBody(command=["sh", "-c", "echo from-guest-$((2 + 2)); exit 5"]),
)
assert isinstance(result, ExecResult), result
assert result.stdout == "from-guest-4\n", result
assert result.exit_code == 5, result

deleted = sandboxes_delete.sync_detailed("generated", client=client, force=True)
assert deleted.status_code == 204, deleted
gone = sandboxes_get.sync_detailed("generated", client=client)
assert gone.status_code == 404, gone
assert isinstance(gone.parsed, ErrorBody) and gone.parsed.error.code == "not_found"
print("ok")
