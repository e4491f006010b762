"""The local runner's worker command when workers are forked
(`pipeline.beam.forkserver`): `python -I -S forkclient.py SOCKET`.

Standard library only, so it starts in milliseconds. Hands the fork server
this process's standard streams, environment, working folder and SIGINT
disposition; exits with the forked worker's exit code (1 if the server does
answer or is gone). The server may still be starting: its socket is waited
for up to CONNECT_SECONDS."""

import json
import os
import signal
import socket
import sys
import time

CONNECT_SECONDS = 120
REFUSED_SECONDS = 2


def connect(path: str) -> socket.socket:
    """Connected to the server at `path`: waited for while its socket is not
    there yet (a server still starting); refused for longer than a moment
    (bound, listening any moment) means the server is gone."""
    start = time.monotonic()
    while True:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            return conn
        except (FileNotFoundError, ConnectionRefusedError) as e:
            conn.close()
            waited = time.monotonic() - start
            if waited > CONNECT_SECONDS or (isinstance(e, ConnectionRefusedError) and waited > REFUSED_SECONDS):
                raise
            time.sleep(0.02)


def main(path: str) -> int:
    try:
        conn = connect(path)
    except OSError as e:
        print(f"fork client: no fork server at {path}: {e}", file=sys.stderr)
        return 1
    body = json.dumps({"env": dict(os.environ), "cwd": os.getcwd(),
                       "sigint_ignored": signal.getsignal(signal.SIGINT) == signal.SIG_IGN}).encode()
    socket.send_fds(conn, [len(body).to_bytes(8, "big")], [0, 1, 2])
    conn.sendall(body)
    answer = b""
    while chunk := conn.recv(64):
        answer += chunk
    try:
        code = int(answer)
    except ValueError:
        return 1
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
