from parakeet_serve.cli import main

main()
