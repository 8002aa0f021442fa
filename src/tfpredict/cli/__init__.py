"""The `tfpredict` command: argument parsing and printing only; the work is done by library functions.

main.py builds the parser and maps errors to exit codes; one module per command (predict, doctor, serve,
inspect); options.py holds the flags two commands share; terminal.py the progress bar, signals and hiding
TensorFlow's C++ logs. Nothing in the library imports this package.
"""
