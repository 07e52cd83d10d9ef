from pushsvc.cli import main

main(prog_name="pushsvc")
