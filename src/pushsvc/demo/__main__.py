"""`python -m pushsvc.demo`: the same command as `pushsvc demo`."""

from pushsvc.demo.command import demo

if __name__ == "__main__":
    demo(prog_name="python -m pushsvc.demo")
