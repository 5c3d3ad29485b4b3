"""Calls rollcall's greeter through xDS, with no etcd code and no generated
code: the control plane named by $GRPC_XDS_BOOTSTRAP says where the
instances are, and gRPC balances and retries each call.

Usage: GRPC_XDS_BOOTSTRAP=bootstrap.json greeter_client.py [THREADS]
Prints "ok INSTANCE" or "failed CODE DETAILS" per call, until stdin closes.
"""
import sys
import threading

import grpc


def string_field(message, number):
    """The string field `number` of a protobuf message (what SayHelloResponse holds)."""
    i = 0
    while i < len(message):
        key, i = varint(message, i)
        if key & 7 == 0:
            _, i = varint(message, i)
            continue
        size, i = varint(message, i)  # every field of the response is length-delimited
        if key >> 3 == number:
            return message[i:i + size].decode()
        i += size
    return ""


def varint(buf, i):
    value, shift = 0, 0
    while True:
        b = buf[i]
        value |= (b & 0x7F) << shift
        i, shift = i + 1, shift + 7
        if b < 0x80:
            return value, i


stop = threading.Event()
lock = threading.Lock()

# The client: ten lines.
channel = grpc.insecure_channel("xds:///greeter")
say_hello = channel.unary_unary("/greeter.v1.GreeterService/SayHello")
request = b"\x0a\x06python"  # SayHelloRequest{name: "python"}, field 1


def call_until_stopped():
    while not stop.is_set():
        try:
            reply = say_hello(request, timeout=5, wait_for_ready=True)
            line = "ok " + string_field(reply, 2)  # SayHelloResponse.instance_id
        except grpc.RpcError as e:
            line = "failed %s %s" % (e.code().name, e.details())
        with lock:
            print(line, flush=True)


threads = [threading.Thread(target=call_until_stopped) for _ in range(int(sys.argv[1]) if len(sys.argv) > 1 else 1)]
for t in threads:
    t.start()
sys.stdin.read()
stop.set()
for t in threads:
    t.join()
channel.close()
