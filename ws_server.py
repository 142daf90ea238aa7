"""WIRTHFORGE real-time server: ``python ws_server.py --help``.

A thin entry point; the server lives in the ``wirthforge_ws`` package
(configuration: wirthforge_ws/settings.py).
"""

from wirthforge_ws.http.app import main

if __name__ == "__main__":
    main()
