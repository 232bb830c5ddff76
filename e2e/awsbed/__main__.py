"""python -m awsbed --port PORT: serve the extended emulator on 127.0.0.1."""

import argparse

from werkzeug.serving import run_simple

from . import Bed


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=15000)
    args = parser.parse_args()
    run_simple("127.0.0.1", args.port, Bed(), threaded=True, use_reloader=False)


if __name__ == "__main__":
    main()
