module github.com/rollcall/rollcall/services/greeter

go 1.26.0
