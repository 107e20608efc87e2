from parakeet_operator.main import main

main()
