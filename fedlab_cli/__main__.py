from fedlab_cli.cli import main

main()
