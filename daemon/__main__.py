from topslot.cli import main

main()
