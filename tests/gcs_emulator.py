"""A Cloud Storage emulator on loopback for the gs:// tests (the `gcs` fixture in conftest.py).

gcp-storage-emulator (a pip package, the dev extra) serves the JSON API on 127.0.0.1; the clients are pointed at
it through their documented variables: STORAGE_EMULATOR_HOST (gcsfs, which etils.epath uses, and
google-cloud-storage), TENSORSTORE_GCS_HTTP_URL (the tensorstore driver Orbax writes arrays with), and
GOOGLE_AUTH_TOKEN_FOR_TESTING so tensorstore does not look for credentials. Child processes inherit them.

The emulator's media downloads lack two things of the real service that tensorstore relies on when it re-reads
an object it is updating (Orbax's OCDBT manifest, written in several rounds): the `x-goog-generation` header and
the `ifGenerationMatch` / `ifGenerationNotMatch` preconditions. Run as a script, this module starts the emulator
with its download handler completed in those two respects, so tensorstore sees the real protocol.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

BUCKET = "mirrortalk-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def variables(endpoint: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": endpoint, "TENSORSTORE_GCS_HTTP_URL": endpoint,
            "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GOOGLE_CLOUD_PROJECT": "test"}


@contextlib.contextmanager
def running(log_path: str) -> Iterator[str]:
    """Starts the emulator with an empty in-memory bucket BUCKET; yields its endpoint http://127.0.0.1:PORT."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    with open(log_path, "wb") as log:
        server = subprocess.Popen([sys.executable, __file__, str(port)], stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/storage/v1/b/{BUCKET}", timeout=2).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the Cloud Storage emulator did not start; see {log_path}") from None
                    time.sleep(0.2)
            yield endpoint
        finally:
            server.terminate()
            server.wait(timeout=30)


def _serve(port: int) -> None:
    from http import HTTPStatus

    from gcp_storage_emulator import server as emulator_server
    from gcp_storage_emulator.exceptions import NotFound
    from gcp_storage_emulator.handlers import objects

    plain_download = objects.download

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
        except NotFound:
            return plain_download(request, response, storage, *args, **kwargs)  # its 404
        generation = str(obj["generation"])
        response["x-goog-generation"] = generation
        response["x-goog-metageneration"] = str(obj.get("metageneration", "1"))
        match = request.query.get("ifGenerationMatch", [None])[0]
        not_match = request.query.get("ifGenerationNotMatch", [None])[0]
        if match is not None and match != generation:
            response.status = HTTPStatus.PRECONDITION_FAILED
        elif not_match is not None and not_match == generation:
            response.status = HTTPStatus.NOT_MODIFIED
        else:
            plain_download(request, response, storage, *args, **kwargs)

    objects.download = download  # the alt=media path of `objects.get` looks it up at call time
    for _, methods in emulator_server.HANDLERS:  # the /download/ route holds the function itself
        for method, handler in list(methods.items()):
            if handler is plain_download:
                methods[method] = download
    server = emulator_server.create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.run()


if __name__ == "__main__":
    _serve(int(sys.argv[1]))
