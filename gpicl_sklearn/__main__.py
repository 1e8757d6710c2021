from gpicl_sklearn.demo import main

main()
