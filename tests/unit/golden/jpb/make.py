#!/usr/bin/python3
"""Goldens for tests/unit/test_json_pb.c, made by a real proto3 JSON
implementation (Debian's python3-protobuf): for every ok/NAME.json, the
jpbtest.Everything that google.protobuf.json_format.Parse makes of it,
serialized deterministically (map entries sorted by key) into ok/NAME.bin,
and what json_format.MessageToJson prints of that message with its
defaults (the encoder's golden) into ok/NAME.out.json.
For every bad/NAME.json, checks that Python refuses it too, unless
bad/NAME.stricter says why we refuse what Python accepts.

    tests/unit/golden/jpb/make.py           rewrite the .bin and .out.json files
    tests/unit/golden/jpb/make.py --check   compare instead (exit 1 on a difference)

Needs protoc (protobuf-compiler) and python3-protobuf. The real well-known
types (Python's own) are used, so this also checks that ours in src/proto
have their field numbers and types."""
import glob
import json
import os
import subprocess
import sys
import tempfile

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message_factory
# The real well-known types, into the default pool before jpbtest needs them.
from google.protobuf import any_pb2, duration_pb2, empty_pb2, struct_pb2  # noqa: F401
from google.protobuf import timestamp_pb2, wrappers_pb2, field_mask_pb2  # noqa: F401

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.abspath(os.path.join(HERE, "..", "..", "..", ".."))


def load_everything():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "jpbtest.pb")
        subprocess.run(["protoc", "--descriptor_set_out=" + out,
                        "-I" + os.path.join(TOP, "src", "proto"),
                        "-I" + os.path.join(TOP, "tests", "unit", "proto"),
                        os.path.join(TOP, "tests", "unit", "proto", "jpbtest.proto")], check=True)
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    pool = descriptor_pool.Default()
    for fdp in fds.file:
        pool.Add(fdp)
    factory = message_factory.MessageFactory(pool)
    return factory.GetPrototype(pool.FindMessageTypeByName("jpbtest.Everything"))


def main():
    check = "--check" in sys.argv[1:]
    everything = load_everything()
    bad = 0
    for path in sorted(glob.glob(os.path.join(HERE, "ok", "*.json"))):
        if path.endswith(".out.json"):
            continue
        with open(path, encoding="utf-8") as f:
            text = f.read()
        msg = everything()
        json_format.Parse(text, msg)
        data = msg.SerializeToString(deterministic=True)
        bin_path = path[:-len(".json")] + ".bin"
        # Of the message as read back from its bytes, as /config_dump sees
        # a resource; MessageToDict with every default (json_format's own).
        back = everything()
        back.ParseFromString(data)
        out = json.dumps(json_format.MessageToDict(back), indent=1, sort_keys=True,
                         ensure_ascii=False) + "\n"
        out_path = path[:-len(".json")] + ".out.json"
        if check:
            with open(bin_path, "rb") as f:
                if f.read() != data:
                    print("differs:", bin_path)
                    bad += 1
            with open(out_path, encoding="utf-8") as f:
                if f.read() != out:
                    print("differs:", out_path)
                    bad += 1
        else:
            with open(bin_path, "wb") as f:
                f.write(data)
            with open(out_path, "w", encoding="utf-8") as f:
                f.write(out)
    for path in sorted(glob.glob(os.path.join(HERE, "bad", "*.json"))):
        with open(path, "rb") as f:
            raw = f.read()
        try:
            json_format.Parse(raw.decode("utf-8"), everything())
            accepted = True
        except Exception:  # noqa: BLE001 (any refusal counts, KeyError included)
            accepted = False
        stricter = os.path.exists(path[:-len(".json")] + ".stricter")
        if accepted and not stricter:
            print("python accepts, and no .stricter says why we do not:", path)
            bad += 1
        if not accepted and stricter:
            print("python refuses it too; drop", path[:-len(".json")] + ".stricter")
            bad += 1
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
