from blockqnn.cli import entry

entry()
