/// GET /chat: placeholder, replaced below.
enum ChatPage {
    static let html = "<!doctype html><title>chat</title>"
}
