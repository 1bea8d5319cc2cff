# cliente.py from "Tema 12. Sockets" (Antonio Villena Martín), kept as a
# real peer for the interoperability tests.
#
# The only change from the tutorial's text: so that tests never take a fixed
# port, an optional port argument is read (default 5000, as in the tutorial).
import socket
import sys


def main():
    # Establece los datos del socket del servidor al que nos queremos conectar
    host = '127.0.0.1'
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    # Crea el objeto socket
    mySocket = socket.socket()
    # Establece conexión a los datos del socket del servidor
    mySocket.connect((host, port))
    # Solicita la entrada de texto al usuario
    message = input(" -> ")
    while message != 'q':
        # Codifica el mensaje y lo envia al servidor
        mySocket.send(message.encode())
        # Recibe la respuesta del servidor
        data = mySocket.recv(1024).decode()
        print('Recibido del servidor: ' + data)
        message = input(" -> ")
    # Cierra la conexión
    mySocket.close()


if __name__ == '__main__':
    main()
