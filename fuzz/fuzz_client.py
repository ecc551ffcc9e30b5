"""atheris target: RtspClient.receive (client.py): replies read by RtspReader, every state.

Run: .venv/bin/python fuzz/fuzz_client.py -max_total_time=3600 fuzz/corpus/client
"""

from _main import run

if __name__ == "__main__":
    run("client")
