#!/usr/bin/python3
"""A local SMTP sink for settle: a real SMTP server (aiosmtpd) on loopback that keeps every mail.

Each message is written to DIR as <n>.eml (the raw message), appended to DIR/messages.jsonl
(one JSON object per message: envelope sender and recipients, subject, decoded text and HTML
parts) and summarised in DIR/mail.log for people. `make run` starts one on 127.0.0.1:56725; tests
start their own on a free port.

usage: smtp_sink.py --port PORT --dir DIR [--host 127.0.0.1] [--stall-after N]

--stall-after N accepts N messages, then never answers the DATA of the next ones: a server that
hangs mid-conversation, for the tests of what the sender has committed while a send is in flight.
"""
import argparse
import asyncio
import email
import email.policy
import json
import os
import signal

from aiosmtpd.controller import Controller


class Sink:
    def __init__(self, directory, stall_after=None):
        self.directory = directory
        self.stall_after = stall_after
        os.makedirs(directory, exist_ok=True)
        self.count = len([f for f in os.listdir(directory) if f.endswith(".eml")])

    async def handle_DATA(self, server, session, envelope):
        if self.stall_after is not None and self.count >= self.stall_after:
            await asyncio.Event().wait()  # never answers
        self.count += 1
        raw = envelope.original_content or envelope.content
        message = email.message_from_bytes(raw, policy=email.policy.default)
        parts = {"text": None, "html": None}
        for part in message.walk():
            kind = part.get_content_type()
            if kind == "text/plain" and parts["text"] is None:
                parts["text"] = part.get_content()
            elif kind == "text/html" and parts["html"] is None:
                parts["html"] = part.get_content()
        record = {
            "from": envelope.mail_from,
            "to": list(envelope.rcpt_tos),
            "subject": str(message.get("Subject", "")),
            "text": parts["text"],
            "html": parts["html"],
        }
        with open(os.path.join(self.directory, f"{self.count:06d}.eml"), "wb") as f:
            f.write(raw)
        with open(os.path.join(self.directory, "messages.jsonl"), "a") as f:
            f.write(json.dumps(record) + "\n")
        with open(os.path.join(self.directory, "mail.log"), "a") as f:
            f.write(f"--- mail {self.count}: to {', '.join(record['to'])}\n")
            f.write(f"Subject: {record['subject']}\n\n{record['text'] or ''}\n")
        return "250 Message accepted for delivery"


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--stall-after", type=int, default=None)
    args = parser.parse_args()
    controller = Controller(Sink(args.dir, args.stall_after), hostname=args.host, port=args.port)
    controller.start()
    print(f"smtp sink listening on {args.host}:{args.port}, mail in {args.dir}", flush=True)
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.run_until_complete(stop.wait())
    controller.stop()


if __name__ == "__main__":
    main()
