from trinity.cli import main

main()
