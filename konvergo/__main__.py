from konvergo.cli.main import main

main()
