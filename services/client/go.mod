module github.com/rollcall/rollcall/services/client

go 1.26.0
