#!/usr/bin/env python3
"""Summarises `perf script -F comm,tid,ip,sym` output of the paper bench's profile mode
(papers/tara-2021.md, "Where the time goes"): shares of the worker threads' samples by what
the CPU did (the leaf function) and by the innermost tara module.

    python3 benches/common/perf_summary.py tara.script x            # leaf and module tables
    python3 benches/common/perf_summary.py tara.script ops executor # by operator, one in detail

Operators are told apart by the inlined generic names, so run `perf script` without
--no-inline for the `ops` mode.
"""
import sys, re, collections
def samples(path):
    frames=[]; 
    for line in open(path, errors='replace'):
        line=line.rstrip('\n')
        if not line.strip():
            if frames: yield frames
            frames=[]; continue
        if line.startswith('\t') or line.startswith(' '):
            parts=line.strip().split(' ',1)
            frames.append(parts[1] if len(parts)>1 else '?')
    if frames: yield frames
def leaf_cat(f):
    s=f
    rules=[('allocation (mimalloc, page faults)', r'^_?mi_|mi_free|malloc|__rust_alloc|__rust_dealloc|clear_page|rust_realloc|realloc|alloc::raw_vec|do_anonymous_page|page_fault'),
           ('clock reads (clock_gettime)', r'clock_gettime|Instant::now|Timespec::now'),
           ('hashing and hash maps', r'hashbrown|SipHasher|Hasher|hash::'),
           ('BTreeMap', r'btree'),
           ('BinaryHeap', r'binary_heap|BinaryHeap'),
           ('sorting', r'sort::'),
           ('memcpy/memcmp', r'memmove|memcpy|memcmp|memset'),
           ('timely progress tracking', r'timely::progress|ChangeBatch|MutableAntichain|reachability'),
           ('timely channels and exchange', r'pushers|pact::|Exchange|CapacityContainerBuilder|timely_communication|mpmc|push_into|Message'),
           ('kernel: scheduling, futex, wake-ups', r'^(finish_task_switch|_raw_spin|futex|schedule|__schedule|try_to_wake|syscall|entry_SYSCALL|do_syscall|__x64|native_|psi_|update_|dequeue|enqueue|pick_|__futex|ttwu|switch_|select_task)'),
          ]
    for name,rx in rules:
        if re.search(rx,s): return name
    if s.startswith('tara::') or s.startswith('<tara::'): return 'tara code (self)'
    if 'timely' in s: return 'timely other'
    return 'other'
def stage(frames):
    for f in frames:
        m=re.search(r'tara::protocol::(\w+)',f)
        if m: return 'protocol::'+m.group(1)
    for f in frames:
        m=re.search(r'tara::dataflow::(\w+)',f)
        if m: return 'dataflow::'+m.group(1)
        m=re.search(r'paper::(\w+)',f)
        if m: return 'bench::'+m.group(1)
    for f in frames:
        if 'timely' in f: return 'timely (outside tara code)'
    return 'other'
path=sys.argv[1]
total=0; leaf=collections.Counter(); st=collections.Counter(); both=collections.Counter(); sym=collections.Counter()
for fr in samples(path):
    if not any('step_or_park' in f for f in fr): continue   # worker threads only
    total+=1
    l=leaf_cat(fr[0]); s=stage(fr)
    leaf[l]+=1; st[s]+=1; both[(s,l)]+=1; sym[fr[0]]+=1
print(f"worker samples: {total}")
print("\nby what the CPU was doing (leaf function):")
for k,v in leaf.most_common(): print(f"  {k:<45} {100*v/total:5.1f}%")
print("\nby the innermost tara module on the stack:")
for k,v in st.most_common(15): print(f"  {k:<45} {100*v/total:5.1f}%")
if len(sys.argv)>2:
    print("\nstage x leaf (top 25):")
    for (s,l),v in both.most_common(25): print(f"  {s:<30} {l:<40} {100*v/total:5.1f}%")
    print("\ntop leaf symbols:")
    for k,v in sym.most_common(25): print(f"  {k[:90]:<90} {100*v/total:5.1f}%")

def operator(frames):
    for f in reversed(frames):
        m=re.search(r'host::host::\{closure_env#2\}<tara::protocol::(\w+)::',f)
        if m: return m.group(1)
    for f in reversed(frames):
        if 'tara::dataflow::merge' in f: return 'merge'
        if 'tara_loop::client_op' in f or 'bare::client_op' in f: return 'clients'
        if 'delivered_replies' in f: return 'replies'
        if 'bare::proposer' in f: return 'proposer'
        if 'bare::relay' in f: return 'committer'
        if 'bare::executor' in f: return 'executor'
        if 'feedback' in f.lower(): return 'feedback'
    for f in frames:
        if 'OperatorCore' in f or 'builder_raw' in f: return 'other operators'
    for f in frames:
        if 'park' in f and 'step_or_park' not in f: return 'worker park/unpark'
    return 'timely worker: scheduling, progress, channels'
def tara_fn(frames):
    for f in frames:
        if re.match(r'<?tara::protocol', f) or 'tara::protocol::' in f.split('<')[0]:
            return re.sub(r'<.*','',f)[:80]
    return '-'
if len(sys.argv)>2 and sys.argv[2]=='ops':
    ops=collections.Counter(); opl=collections.Counter(); fn=collections.Counter(); total=0
    for fr in samples(path):
        if not any('step_or_park' in f for f in fr): continue
        total+=1
        o=operator(fr); ops[o]+=1; opl[(o,leaf_cat(fr[0]))]+=1
        if len(sys.argv)>3 and o==sys.argv[3]: fn[tara_fn(fr)]+=1
    print(f"\nworker samples {total}; by operator:")
    for k,v in ops.most_common(): print(f"  {k:<48} {100*v/total:5.1f}%")
    print("\noperator x leaf (>=0.8%):")
    for (o,l),v in opl.most_common():
        if 100*v/total>=0.8: print(f"  {o:<30} {l:<40} {100*v/total:5.1f}%")
    if fn:
        print(f"\n{sys.argv[3]}: innermost tara::protocol function")
        for k,v in fn.most_common(20): print(f"  {k:<80} {100*v/total:5.1f}%")
