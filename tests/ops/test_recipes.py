print("ok - placeholder")
