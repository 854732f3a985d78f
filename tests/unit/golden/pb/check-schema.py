#!/usr/bin/python3
"""Check Outrigger's own .proto files (src/proto) against the real schemas.

Usage: check-schema.py OURS.pb REAL.pb [REAL.pb ...]

Each argument is a FileDescriptorSet (protoc --include_imports -o FILE).
For every message and enum in OURS, the same full name must exist in a REAL
set, and every field we declare must match the real one of the same number:
name, JSON name, type, label, message/enum type and oneof grouping. Every
enum must list exactly the real values (an enum value we do not know would
be refused at run time, so we must know them all). Fields the real message
has and ours leaves out are listed as the subset (informational).
Exits 1 on any mismatch. See README.md for how the inputs are produced.
"""
import sys
from google.protobuf import descriptor_pb2 as d

FD = d.FieldDescriptorProto
OPTIONAL = '(proto3 optional)'


def load(path):
    s = d.FileDescriptorSet()
    with open(path, 'rb') as f:
        s.ParseFromString(f.read())
    return s


def index(sets):
    msgs, enums = {}, {}

    def walk_msg(m, prefix):
        full = prefix + m.name
        msgs[full] = m
        for n in m.nested_type:
            walk_msg(n, full + '.')
        for e in m.enum_type:
            enums[full + '.' + e.name] = e

    for s in sets:
        for f in s.file:
            p = '.' + f.package + '.' if f.package else '.'
            for m in f.message_type:
                walk_msg(m, p)
            for e in f.enum_type:
                enums[p + e.name] = e
    return msgs, enums


def oneof_of(m, f):
    """The oneof a field belongs to: None for a plain field, OPTIONAL for a
    proto3 `optional` one (protoc-c 1.4 cannot generate those, so ours
    declares a one-member oneof instead: the same wire and JSON form)."""
    if not f.HasField('oneof_index'):
        return None
    if f.proto3_optional:
        return OPTIONAL
    return m.oneof_decl[f.oneof_index].name


def presence(m, f):
    """Whether a scalar tracks presence: in a oneof or proto3 optional."""
    return f.HasField('oneof_index')


def main():
    ours_set = load(sys.argv[1])
    real_msgs, real_enums = index([load(p) for p in sys.argv[2:]])
    ours_msgs, ours_enums = index([ours_set])
    bad = 0
    left_out = 0
    for name, m in sorted(ours_msgs.items()):
        if m.options.map_entry:
            continue
        r = real_msgs.get(name)
        if r is None:
            print(f'MISSING message {name} in the real schema')
            bad += 1
            continue
        rf = {f.number: f for f in r.field}
        groups = {}
        for f in m.field:
            g = rf.get(f.number)
            where = f'{name}.{f.name} = {f.number}'
            if g is None:
                print(f'BAD {where}: no such number upstream')
                bad += 1
                continue
            checks = [('name', f.name, g.name), ('json_name', f.json_name, g.json_name),
                      ('type', FD.Type.Name(f.type), FD.Type.Name(g.type)),
                      ('label', FD.Label.Name(f.label), FD.Label.Name(g.label)),
                      ('type_name', f.type_name, g.type_name),
                      ('presence', presence(m, f), presence(r, g))]
            for what, a, b in checks:
                if a != b:
                    print(f'BAD {where}: {what} {a!r} upstream {b!r}')
                    bad += 1
            # Fields that share a oneof in ours must share one upstream.
            mo, ro = oneof_of(m, f), oneof_of(r, g)
            if mo is not None:
                groups.setdefault(mo, set()).add(ro)
            elif ro is not None:
                print(f'BAD {where}: upstream in oneof {ro}, ours not')
                bad += 1
        sizes = {}
        for f in m.field:
            if oneof_of(m, f) is not None:
                sizes[oneof_of(m, f)] = sizes.get(oneof_of(m, f), 0) + 1
        for mo, ros in groups.items():
            if ros == {OPTIONAL} and sizes[mo] == 1:
                continue
            if len(ros) != 1 or None in ros or OPTIONAL in ros:
                print(f'BAD {name} oneof {mo}: upstream groups {ros}')
                bad += 1
        ours_nums = {f.number for f in m.field}
        rest = [f'{f.name}={f.number}' for f in r.field if f.number not in ours_nums]
        if rest:
            left_out += len(rest)
            print(f'subset {name}: left out {", ".join(rest)}')
    for name, e in sorted(ours_enums.items()):
        r = real_enums.get(name)
        if r is None:
            print(f'MISSING enum {name} in the real schema')
            bad += 1
            continue
        a = {(v.name, v.number) for v in e.value}
        b = {(v.name, v.number) for v in r.value}
        if a != b:
            print(f'BAD enum {name}: ours {sorted(a - b)} upstream {sorted(b - a)}')
            bad += 1
    n = sum(1 for m in ours_msgs.values() if not m.options.map_entry)
    print(f'{n} messages, {len(ours_enums)} enums checked; {left_out} upstream fields left out; '
          f'{bad} problems')
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
