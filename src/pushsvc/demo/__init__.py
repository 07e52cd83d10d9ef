"""The demo producer: `pushsvc demo`, also `python -m pushsvc.demo`.

A restaurant's kitchen and dining room and a web shop on a simulated day (`scenario`, on the
clock of `clock`), posted as they fall due on the machine's clock (`runner`, `publisher`);
`command` is the click command with its `PUSHSVC_DEMO_*` variables.
"""
