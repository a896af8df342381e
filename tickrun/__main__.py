from tickrun.cli import console

console()
